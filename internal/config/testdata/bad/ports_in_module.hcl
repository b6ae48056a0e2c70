module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  heartbeat {
    port = 30000
  }

  replication {
    port = 30000
    dir "/var/lib/pg" {}
  }

  health {
    port = 9453
  }
}
