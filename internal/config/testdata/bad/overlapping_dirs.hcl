module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    dir "/srv/data/sub" {}
    dir "/srv/data" {}
    dir "/srv/database" {}
  }
}
