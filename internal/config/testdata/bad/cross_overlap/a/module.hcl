module "a" {
  kind  = "mirror"
  id    = 1
  nodes = ["node1", "node2"]

  replication {
    dir "/srv/data" {}
  }
}
