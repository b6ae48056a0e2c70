module "a" {
  kind  = "mirror"
  id    = 1
  nodes = ["node1", "node2"]

  vip {
    address = "198.18.0.100/24"
  }
}
