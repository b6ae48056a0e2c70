module "web" {
  kind            = "farm"
  id              = 12
  nodes           = ["node1", "node2"]
  failover        = false
  default_primary = "node1"
}
