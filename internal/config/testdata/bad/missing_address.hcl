# node3 has no address on network "replication".
module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node3"]

  replication {
    dir "/var/lib/pg" {}
  }
}
