module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  heartbeet {
    pulse = "1s"
  }
  heartbeat {
    pulse   = "1s"
    timeout = "5s"
    interval = "1s"
  }
}
