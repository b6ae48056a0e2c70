module "b" {
  kind  = "farm"
  id    = 2
  nodes = ["node3"]

  vip {
    address = "198.18.0.100/24"
  }
}
