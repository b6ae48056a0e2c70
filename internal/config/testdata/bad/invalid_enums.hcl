module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  replication {
    mode = "semi-sync"
    dir "/var/lib/pg" {}
  }

  check "errd" "postmaster" {
    action  = "restat"
    when    = "primary"
    process = "postgres"
  }
}
