module "pg" {
  kind          = "mirror"
  id            = 12
  nodes         = ["node1", "node2"]
  loop_interval = 24
  sync_delta    = "-5m"

  heartbeat {
    pulse   = "1 sec"
    timeout = "0s"
  }
}
