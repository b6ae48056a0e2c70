# Derived ports: heartbeat 20001, replication 21001.
module "a" {
  kind  = "mirror"
  id    = 1
  nodes = ["node1", "node2"]

  replication {
    dir "/srv/a" {}
  }
}
