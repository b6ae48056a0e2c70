# scripts/ has a stop_prim that is not executable and no start_prim.
module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]
}
