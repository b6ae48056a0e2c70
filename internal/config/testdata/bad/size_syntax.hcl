module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    zone_size = "64 kilobytes"
    dir "/var/lib/pg" {}

    resync {
      bandwidth = "fast"
    }
  }
}
