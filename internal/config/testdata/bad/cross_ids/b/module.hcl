module "b" {
  kind  = "light"
  id    = 7
  nodes = ["node2"]
}
