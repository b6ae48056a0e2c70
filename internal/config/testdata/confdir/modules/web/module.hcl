module "web" {
  kind  = "farm"
  id    = 5
  nodes = ["node1", "node2", "node3"]

  vip {
    address = "198.18.0.150/24"
  }

  farm {
    balance = "client_ip_port"
    power   = { node3 = 0 }
    ports   = [443]
  }

  check "tcp" "https" {
    address = "127.0.0.1:443"
  }
}
