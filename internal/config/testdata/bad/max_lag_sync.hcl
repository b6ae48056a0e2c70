module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    mode    = "sync"
    max_lag = "5s"
    dir "/var/lib/pg" {}
  }
}
