module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]
}

module "pg2" {
  kind  = "mirror"
  id    = 13
  nodes = ["node1", "node2"]
}
