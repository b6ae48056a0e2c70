module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  heartbeat {
    port = -1
  }

  replication {
    port = "abc"
    dir "/var/lib/pg" {}
  }

  health {
    port = 1.5
  }
}
