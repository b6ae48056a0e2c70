module "pg" {
  kind  = "mirorr"
  id    = 12
  nodes = ["node1", "node2"]
}
