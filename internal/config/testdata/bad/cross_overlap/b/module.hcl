module "b" {
  kind  = "mirror"
  id    = 2
  nodes = ["node2", "node1"]

  replication {
    dir "/srv/data/b" {}
    dir "/srv/other" {}
    dir "/srv" {}
  }
}
