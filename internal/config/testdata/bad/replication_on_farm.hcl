module "web" {
  kind  = "farm"
  id    = 12
  nodes = ["node1", "node2", "node3"]

  heartbeat {
    pulse = "1s"
  }

  replication {
    dir "/var/www" {}
  }
}
