module "pg" {
  kind     = "mirror"
  id       = 1000
  nodes    = ["node1", "node2"]
  max_loop = 0
}
