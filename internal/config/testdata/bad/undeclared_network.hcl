module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  heartbeat {
    networks = ["default", "replicaton", "default"]
  }

  vip {
    address = "198.18.0.100/24"
    network = "dmz"
  }

  replication {
    network = "backup"
    dir "/var/lib/pg" {}
  }
}
