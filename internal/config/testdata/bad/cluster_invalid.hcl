cluster "bad" {
  health_port = 70000
  network "default" {}

  node "node1" {
    addresses = { default = "db1.example.com", backup = "198.18.2.1" }
  }
  node "node2" {
    addresses = {}
  }
  node "node3" {}
}
