# Its replication port is a's derived heartbeat port.
module "b" {
  kind  = "mirror"
  id    = 2
  nodes = ["node1", "node2"]

  replication {
    port = 20001
    dir "/srv/b" {}
  }
}
