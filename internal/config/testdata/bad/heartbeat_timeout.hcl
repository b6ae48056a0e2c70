module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  heartbeat {
    pulse   = "2s"
    timeout = "1500ms"
  }
}
