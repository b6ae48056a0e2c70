# Its farm port is b's derived heartbeat port (20002); its health port is
# shared with the cluster's, which is fine.
module "d" {
  kind  = "farm"
  id    = 4
  nodes = ["node1", "node2"]

  farm {
    port = 20002
  }

  health {
    port = 9010
  }
}
