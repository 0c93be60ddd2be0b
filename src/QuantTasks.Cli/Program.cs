using QuantTasks.Cli;

return QuantApp.Run(args, Console.Out, Console.Error);
