# light-generic: watches a service on one node and restarts it when it
# fails: no replication, no failover. Edit the lines marked EDIT.
module "light-generic" {
  description = "Local supervision of one service: process and custom checkers, restart scripts"
  kind        = "light"
  id          = 3         # EDIT: unique in the cluster
  nodes       = ["node3"] # EDIT: the node the service runs on

  max_loop      = 5 # at most 5 checker-caused restarts...
  loop_interval = "1h" # ...per hour, then the module stops with the reason

  app {
    env = {
      START_COMMAND = "systemctl start generic.service" # EDIT
      STOP_COMMAND  = "systemctl stop generic.service"  # EDIT
      PROCESS       = "generic"                         # EDIT
    }
  }

  check "errd" "process" {
    action   = "restart"
    name     = "generic" # EDIT
    at_least = 1
  }

  # Any executable: exit 0 = up. This one probes a URL (see the script).
  check "custom" "health" {
    interval = "30s"
    timeout  = "10s"
    action   = "restart"
    command  = "scripts/check_health"
  }
}
