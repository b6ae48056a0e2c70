# An unknown kind: blocks of every kind are decoded, but not checked
# against a kind, and give no follow-on errors.
module "pg" {
  kind  = "mirorr"
  id    = 12
  nodes = ["node1", "node2"]

  heartbeat {
    pulse = "1s"
  }

  replication {
    dir "/var/lib/pg" {}
  }

  farm {
    balance = "client_ip"
  }
}
