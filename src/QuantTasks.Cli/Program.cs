using System.Runtime.InteropServices;
using QuantTasks.Cli;

// Ctrl+C and SIGTERM (what MSBuild's cancel and CI runners send) stop the job between units of work; outputs are
// written only at the end, so nothing half-written is left. A second Ctrl+C ends the process at once.
using var cancel = new CancellationTokenSource();
void Stop(PosixSignalContext context)
{
    if (!cancel.IsCancellationRequested)
    {
        context.Cancel = true;
        cancel.Cancel();
    }
}

using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
return QuantApp.Run(args, Console.Out, Console.Error, cancel.Token);
