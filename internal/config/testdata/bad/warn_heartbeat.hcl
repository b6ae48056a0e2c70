# Valid, with warnings: a short timeout and a single heartbeat network.
module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  heartbeat {
    pulse    = "1s"
    timeout  = "2s"
    networks = ["default"]
  }
}
