module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    zone_size = "64KB"

    resync {
      parallel  = 0
      bandwidth = "100MB"
    }

    dir "/var/lib/pg" {}
  }
}
