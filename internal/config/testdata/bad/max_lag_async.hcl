module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    mode    = "async"
    max_lag = "0s"
    dir "/var/lib/pg" {}
  }
}
