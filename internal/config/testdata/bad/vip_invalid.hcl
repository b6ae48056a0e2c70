module "web" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  vip {
    address = "198.18.0.100"
  }
  vip {
    address = "198.18.0.300/24"
  }
  vip {
    address = "198.18.0.2/24"
  }
  vip {
    address   = "198.18.7.10/24"
    interface = "a/very/long/interface"
  }
  vip {
    address = "198.18.7.10/24"
  }
}
