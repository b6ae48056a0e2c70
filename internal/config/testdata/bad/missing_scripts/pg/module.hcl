# No scripts directory at all.
module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]
}
