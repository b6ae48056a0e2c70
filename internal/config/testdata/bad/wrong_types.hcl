module "pg" {
  kind     = "mirror"
  id       = "twelve"
  nodes    = "node1"
  failover = "maybe"
  max_loop = 2.5

  vip {
    address        = "198.18.0.100/24"
    announce_count = [3]
  }
}
