# nginx-farm: nginx on N nodes behind one VIP, balanced in the kernel
# without a load balancer. Every node serves; when one fails, its share of
# new connections moves to the others. Edit the lines marked EDIT.
module "nginx-farm" {
  description = "nginx web farm with load balancing and failover"
  kind        = "farm"
  id          = 2                           # EDIT: unique in the cluster; port 22002 (membership) derives from it
  nodes       = ["node1", "node2", "node3"] # EDIT

  vip {
    address = "198.18.0.200/24" # EDIT: the address clients use
  }

  farm {
    balance = "client_ip" # a client keeps reaching the same node
    ports   = [80, 443]   # balanced ports; other traffic to the VIP goes to the owner of the VIP
    power   = {           # share of new connections; node3 is twice as big
      node1 = 1
      node2 = 1
      node3 = 2
    }
  }

  app {
    env = { SERVICE = "nginx" }
  }

  check "errd" "nginx" {
    action   = "restart"
    name     = "nginx"
    at_least = 1
  }

  check "tcp" "http" {
    action  = "stopstart" # leave the farm while nginx does not answer
    address = "127.0.0.1:80"
  }
}
