cluster "types" {
  api_port    = "https"
  health_port = 0
  key_file    = ["a", "b"]
  network "default" {}

  node "node1" {
    addresses = "198.18.0.1"
  }
  node "node2" {
    addresses = { default = ["198.18.0.2"] }
  }
  node "node 3" {
    addresses = { (default) = "198.18.0.3" }
  }
}
