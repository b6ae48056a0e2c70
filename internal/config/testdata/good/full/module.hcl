# Every attribute of a mirror module written out, none left to a default.
module "full" {
  description        = "all settings"
  kind               = "mirror"
  id                 = 42
  nodes              = ["node2", "node1"]
  failover           = false
  default_primary    = "node2"
  max_loop           = 7
  loop_interval      = "12h"
  sync_delta         = "10m"
  split_brain_winner = "node1"

  heartbeat {
    pulse    = "700ms"
    timeout  = "4s"
    networks = ["replication", "default"]
    port     = 30042
  }

  vip {
    plugin            = "vip"
    address           = "198.18.0.142/24"
    network           = "default"
    interface         = "eth0"
    announce_count    = 5
    announce_interval = "500ms"
  }

  vip {
    address = "2001:db8::142/64"
  }

  health {
    enabled = false
    port    = 9011
  }

  replication {
    mode           = "async"
    network        = "default"
    port           = 31042
    stall_timeout  = "20s"
    max_lag        = "30s"
    zone_size      = "1MiB"
    quarantine_dir = "/var/lib/halo/quarantine"

    resync {
      parallel  = 8
      bandwidth = "1Gbit/s"
    }

    dir "/srv/full/data/" {
      exclude    = ["*.tmp", "cache/*"]
      must_exist = ["VERSION"]
    }
    dir "/srv/full/logs" {}
  }

  app {
    plugin        = "script"
    scripts       = "scripts"
    start_timeout = "2m"
    stop_timeout  = "45s"
    env           = { A = "1", B = 2 }
  }

  check "tcp" "port" {
    interval = "3s"
    timeout  = "1s"
    action   = "stopstart"
    when     = "prim"
    address  = "127.0.0.1:5432"
  }

  check "custom" "wait-for-san" {
    action  = "wait"
    when    = "pre"
    command = "/usr/local/bin/check-san"
  }
}
