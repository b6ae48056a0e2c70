# mariadb: a MariaDB (or MySQL) server mirrored on two nodes, started and
# stopped by its scripts (not the distribution's service unit: halo decides
# where it runs). Its data directory is replicated synchronously: with
# InnoDB flushing its log at every commit, a COMMIT that returned is on both
# nodes. Edit the lines marked EDIT.
module "mariadb" {
  description     = "MariaDB with synchronous file replication, VIP and failover"
  kind            = "mirror"
  id              = 11                 # EDIT: unique in the cluster
  nodes           = ["node1", "node2"] # EDIT
  default_primary = "node1"

  vip {
    address = "198.18.0.111/24" # EDIT: clients connect to this address
  }

  replication {
    mode = "sync" # fsync (and so COMMIT) returns once the redo log is on both nodes

    dir "/var/lib/mysql" { # EDIT: the data directory (datadir)
      # Per-run files, not data (the pid file and socket normally live in
      # /run/mysqld, these cover a datadir that holds them).
      exclude    = ["*.pid", "*.sock", "mysql.sock.lock"]
      must_exist = ["ibdata1"]
    }
  }

  app {
    start_timeout = "120s" # InnoDB crash recovery after a failover
    stop_timeout  = "90s"  # then stop_prim runs again with "force"
    env = {
      MYSQLD        = "/usr/sbin/mariadbd" # EDIT: the server binary (mysqld for MySQL)
      DATADIR       = "/var/lib/mysql"     # EDIT: the replicated directory above
      MYSQL_OS_USER = "mysql"
      MYSQL_PORT    = "3306"
      MYSQL_SOCKET  = "/run/mysqld/mysqld.sock"
      MYSQL_PIDFILE = "/run/mysqld/mysqld.pid"
      # More server options (the server also reads /etc/mysql/my.cnf,
      # which is not replicated: keep it identical on both nodes).
      MYSQL_OPTS = ""
    }
  }

  # The server process on this data directory (as the scripts start it).
  check "errd" "mariadbd" {
    when     = "prim"
    action   = "restart"
    pattern  = "^\\S*/mariadbd --datadir=/var/lib/mysql( |$)" # EDIT: the binary and data directory
    at_least = 1
  }

  check "tcp" "port" {
    when     = "prim"
    action   = "stopstart"
    interval = "10s"
    timeout  = "3s"
    address  = "198.18.0.111:3306" # EDIT: the VIP
  }
}
