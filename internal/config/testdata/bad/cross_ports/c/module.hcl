# Same port as a's heartbeat, but on a node a does not run on: fine.
# Its health port is the cluster's api_port: not fine.
module "c" {
  kind  = "farm"
  id    = 3
  nodes = ["node3"]

  farm {
    port = 20001
  }

  health {
    port = 9453
  }
}
