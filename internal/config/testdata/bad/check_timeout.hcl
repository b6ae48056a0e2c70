module "pg" {
  kind  = "mirror"
  id    = 12
  nodes = ["node1", "node2"]

  check "tcp" "port" {
    interval = "5s"
    timeout  = "10s"
    address  = "127.0.0.1:5432"
  }
}
