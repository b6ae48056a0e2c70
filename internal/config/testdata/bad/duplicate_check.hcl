module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  check "errd" "postmaster" {
    process = "postgres"
  }

  check "tcp" "postmaster" {
    address = "127.0.0.1:5432"
  }
}
