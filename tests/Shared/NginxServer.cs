using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace QuantTasks.Tests;

/// <summary>
/// A real nginx (Debian's package; <c>.ci/run</c> installs it when missing) on a free port of 127.0.0.1, serving a
/// temporary folder with WebDAV PUT, as a team would put one in front of its CI fleet. One process, no daemon,
/// everything (pid, logs, temporary bodies) inside the folder; stopped and removed on dispose.
/// </summary>
internal sealed class NginxServer : IDisposable
{
    private readonly TempFolder _folder = new();
    private Process? _process;

    /// <param name="requiredToken">When set, every request without <c>Authorization: Bearer TOKEN</c> gets 401.</param>
    public NginxServer(string? requiredToken = null)
    {
        RequiredToken = requiredToken;
        Directory.CreateDirectory(Root);
        Directory.CreateDirectory(_folder.File("tmp"));
        Port = FreePort();
        var guard = requiredToken is null ? "" : $"if ($http_authorization != \"Bearer {requiredToken}\") {{ return 401; }}";
        File.WriteAllText(_folder.File("nginx.conf"), $$"""
            daemon off;
            master_process off;
            worker_processes 1;
            pid {{_folder.File("nginx.pid")}};
            error_log {{_folder.File("error.log")}};
            events { worker_connections 64; }
            http {
              access_log {{AccessLog}};
              client_body_temp_path {{_folder.File("tmp")}};
              proxy_temp_path {{_folder.File("tmp")}};
              fastcgi_temp_path {{_folder.File("tmp")}};
              uwsgi_temp_path {{_folder.File("tmp")}};
              scgi_temp_path {{_folder.File("tmp")}};
              server {
                listen 127.0.0.1:{{Port}};
                root {{Root}};
                location / {
                  {{guard}}
                  dav_methods PUT DELETE;
                  create_full_put_path on;
                  client_max_body_size 1g;
                  autoindex on;
                  autoindex_format json;
                }
              }
            }
            """);
        Start();
    }

    /// <summary>Where nginx is, or null when it is not installed.</summary>
    public static string? Executable => new[] { "/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx" }.FirstOrDefault(File.Exists);

    /// <summary>The folder the server stores PUT files in.</summary>
    public string Root => _folder.File("www");

    /// <summary>Every request, one line each.</summary>
    public string AccessLog => _folder.File("access.log");

    public int Port { get; }

    public string? RequiredToken { get; }

    /// <summary>The base URL builds are given.</summary>
    public string Url => $"http://127.0.0.1:{Port}/";

    /// <summary>The cache entries stored on the server.</summary>
    public string[] Entries => Directory.Exists(Path.Combine(Root, "quanttasks", "v1"))
        ? Directory.GetFiles(Path.Combine(Root, "quanttasks", "v1"), "*.qtc")
        : [];

    /// <summary>Starts nginx and waits until it accepts connections.</summary>
    public void Start()
    {
        var executable = Executable ?? throw new InvalidOperationException("nginx is not installed; .ci/run installs Debian's nginx-light (or nginx) package.");
        _process = Process.Start(new ProcessStartInfo(executable, ["-c", _folder.File("nginx.conf"), "-p", _folder.Path])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        })!;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"nginx exited with {_process.ExitCode}: {_process.StandardError.ReadToEnd()} {File.ReadAllText(_folder.File("error.log"))}");
            }

            try
            {
                using var client = new TcpClient();
                client.Connect(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException)
            {
                Thread.Sleep(50);
            }
        }

        throw new TimeoutException("nginx did not start listening within 20 s.");
    }

    /// <summary>Stops nginx (the port then refuses connections).</summary>
    public void Stop()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }

        _process?.Dispose();
        _process = null;
    }

    public void Dispose()
    {
        Stop();
        _folder.Dispose();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
