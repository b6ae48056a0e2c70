module "pg" {
  kidn  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]
}
