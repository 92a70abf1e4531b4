# One `cell serve` on every Nomad client: `nomad job run deploy/nomad/cell.nomad.hcl`.
# Nomad places, restarts and upgrades the daemons; cell runs the guests inside each one,
# within the ceiling of the client's certificate (see README.md here).
#
# TLS comes from the Nomad Variable `nomad/jobs/cell` (keys tls_crt, tls_key, ca_crt):
#
#   nomad var put nomad/jobs/cell tls_crt=@server.pem tls_key=@server-key.pem ca_crt=@ca.pem
#
# Clients find the nodes through the `cell` service (Consul or Nomad's own catalogue), the
# metrics through `cell-metrics`, tagged for Prometheus' service discovery.
job "cell" {
  type = "system"

  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "cell" {
    network {
      port "rpc" {
        static = 7443
      }
      port "metrics" {
        static = 9464
      }
    }

    service {
      name     = "cell"
      port     = "rpc"
      provider = "nomad"

      check {
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"
      }
    }

    service {
      name     = "cell-metrics"
      port     = "metrics"
      provider = "nomad"
      tags     = ["prometheus"]

      check {
        type     = "http"
        path     = "/metrics"
        interval = "20s"
        timeout  = "2s"
      }
    }

    task "cell" {
      driver = "docker"
      # SIGTERM stops every job ("killed by the operator") within 5 s.
      kill_signal  = "SIGTERM"
      kill_timeout = "15s"

      config {
        image        = "cell:0.1"
        ports        = ["rpc", "metrics"]
        readonly_rootfs = true
        cap_drop     = ["ALL"]
        security_opt = ["no-new-privileges"]
        args = [
          "serve",
          "--config", "/local/cell.toml",
          "--listen", "tls:0.0.0.0:7443",
          "--tls-cert", "/secrets/tls.crt",
          "--tls-key", "/secrets/tls.key",
          "--client-ca", "/secrets/ca.crt",
          "--ceiling", "ci-runner=/local/ceilings/ci-runner.toml",
          "--ceiling", "cell-node=/local/ceilings/cell-node.toml",
          "--metrics", "0.0.0.0:9464",
          "--metrics-public",
          "--cache-dir", "/alloc/data/cell-cache",
        ]
      }

      # The daemon's configuration: the default ceiling (any client the CA signed without a
      # --ceiling of its own), and one ceiling per client identity.
      template {
        destination = "local/cell.toml"
        change_mode = "restart"
        data        = <<-EOT
          max_memory = "256M"
          timeout = "5m"
          max_jobs = 64
          max_procs = 64
        EOT
      }

      template {
        destination = "local/ceilings/ci-runner.toml"
        change_mode = "restart"
        data        = <<-EOT
          # CI runners (certificates named "ci-runner"): bigger jobs, and a network limited
          # to the fleet's artifact cache.
          net = ["connect=artifacts.service.consul:443"]
          max_memory = "1G"
          timeout = "30m"
          max_procs = 256
        EOT
      }

      template {
        destination = "local/ceilings/cell-node.toml"
        change_mode = "restart"
        data        = <<-EOT
          # Other cell nodes (certificates named "cell-node"): pid0s elsewhere spawning here
          # with `cell run --remote`. No network.
          max_memory = "1G"
          timeout = "30m"
          max_procs = 256
        EOT
      }

      template {
        destination = "secrets/tls.crt"
        change_mode = "restart"
        data        = "{{ with nomadVar \"nomad/jobs/cell\" }}{{ .tls_crt }}{{ end }}"
      }

      template {
        destination = "secrets/tls.key"
        change_mode = "restart"
        perms       = "0400"
        data        = "{{ with nomadVar \"nomad/jobs/cell\" }}{{ .tls_key }}{{ end }}"
      }

      template {
        destination = "secrets/ca.crt"
        change_mode = "restart"
        data        = "{{ with nomadVar \"nomad/jobs/cell\" }}{{ .ca_crt }}{{ end }}"
      }

      resources {
        cpu    = 2000
        memory = 1024
        memory_max = 8192
      }
    }
  }
}
