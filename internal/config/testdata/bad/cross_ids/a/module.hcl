module "a" {
  kind  = "light"
  id    = 7
  nodes = ["node1"]
}
