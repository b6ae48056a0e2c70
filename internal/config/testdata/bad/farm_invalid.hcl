module "web" {
  kind  = "farm"
  id    = 12
  nodes = ["node1", "node2", "node3"]

  farm {
    balance = "round_robin"
    power   = { node1 = 1, node4 = 2, node2 = -1, node1 = 3 }
    ports   = [80, 443, 80, 70000]
    pulse   = "5s"
    timeout = "5s"
  }
}
