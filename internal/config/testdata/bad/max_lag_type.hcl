module "pg2" {
  kind  = "mirror"
  id    = 13
  nodes = ["node1", "node2"]

  replication {
    mode    = "async"
    max_lag = 5
    dir "/var/lib/pg2" {}
  }
}
