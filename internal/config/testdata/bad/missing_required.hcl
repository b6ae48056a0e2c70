module "pg" {
  failover = false

  vip {
    network = "default"
  }

  replication {
    mode = "sync"
  }
}
