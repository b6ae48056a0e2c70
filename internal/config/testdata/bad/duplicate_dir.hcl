module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    dir "/var/lib/pg" {}
    dir "/var/lib/pg/" {}
  }
}
