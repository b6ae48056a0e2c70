module "web" {
  kind  = "farm"
  id    = 12
  nodes = ["node1", "node2"]

  farm {
    power = "node1"
    ports = "80"
  }

  app {
    env = ["A=1"]
  }

  vip {
    address = "198.18.0.100/24"
    colour  = "blue"
  }
}
