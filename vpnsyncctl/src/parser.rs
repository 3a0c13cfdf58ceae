//! The command grammar of vpnsyncctl, as a token tree in the bgpctl manner:
//! each word may be abbreviated to its shortest unambiguous prefix.

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ShowSummary,
    ShowClients,
    ShowSync,
    Reload,
    Log { verbose: bool },
    KillClient(String),
}

/// One level of the grammar: keywords and what follows each.
struct Node {
    word: &'static str,
    next: Next,
}

enum Next {
    Done(Command),
    Words(&'static [Node]),
    /// A free argument (a common name) completes the command.
    Name(fn(String) -> Command),
}

const SHOW: &[Node] = &[
    Node { word: "summary", next: Next::Done(Command::ShowSummary) },
    Node { word: "clients", next: Next::Done(Command::ShowClients) },
    Node { word: "sync", next: Next::Done(Command::ShowSync) },
];
const LOG: &[Node] = &[
    Node { word: "verbose", next: Next::Done(Command::Log { verbose: true }) },
    Node { word: "brief", next: Next::Done(Command::Log { verbose: false }) },
];
const KILL: &[Node] = &[Node { word: "client", next: Next::Name(Command::KillClient) }];
const MAIN: &[Node] = &[
    Node { word: "show", next: Next::Words(SHOW) },
    Node { word: "reload", next: Next::Done(Command::Reload) },
    Node { word: "log", next: Next::Words(LOG) },
    Node { word: "kill", next: Next::Words(KILL) },
];

fn valid(nodes: &[Node]) -> String {
    let words: Vec<&str> = nodes.iter().map(|n| n.word).collect();
    format!("valid commands/args: {}", words.join(", "))
}

/// Parses the words after the options.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut nodes = MAIN;
    let mut it = args.iter();
    loop {
        let Some(word) = it.next() else {
            return Err(format!("missing argument; {}", valid(nodes)));
        };
        let matches: Vec<&Node> = nodes.iter().filter(|n| n.word.starts_with(word.as_str())).collect();
        let node = match matches.as_slice() {
            [n] => *n,
            [] => return Err(format!("unknown argument \"{word}\"; {}", valid(nodes))),
            _ => return Err(format!("ambiguous argument \"{word}\"; {}", valid(nodes))),
        };
        let cmd = match &node.next {
            Next::Words(next) => {
                nodes = next;
                continue;
            }
            Next::Done(c) => c.clone(),
            Next::Name(make) => match it.next() {
                Some(name) => make(name.clone()),
                None => return Err(format!("missing argument: {} needs a common name", node.word)),
            },
        };
        if let Some(extra) = it.next() {
            return Err(format!("unexpected argument \"{extra}\""));
        }
        return Ok(cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn full_and_abbreviated() {
        assert_eq!(p("show summary"), Ok(Command::ShowSummary));
        assert_eq!(p("s su"), Ok(Command::ShowSummary));
        assert_eq!(p("sh c"), Ok(Command::ShowClients));
        assert_eq!(p("show sy"), Ok(Command::ShowSync));
        assert_eq!(p("r"), Ok(Command::Reload));
        assert_eq!(p("log v"), Ok(Command::Log { verbose: true }));
        assert_eq!(p("l b"), Ok(Command::Log { verbose: false }));
        assert_eq!(p("kill client alice"), Ok(Command::KillClient("alice".into())));
        assert_eq!(p("k c bob"), Ok(Command::KillClient("bob".into())));
    }

    #[test]
    fn errors_list_the_valid_words() {
        assert_eq!(p("show s"), Err("ambiguous argument \"s\"; valid commands/args: summary, clients, sync".into()));
        assert_eq!(p("frob"), Err("unknown argument \"frob\"; valid commands/args: show, reload, log, kill".into()));
        assert_eq!(p(""), Err("missing argument; valid commands/args: show, reload, log, kill".into()));
        assert_eq!(p("show"), Err("missing argument; valid commands/args: summary, clients, sync".into()));
        assert_eq!(p("kill client"), Err("missing argument: client needs a common name".into()));
        assert_eq!(p("reload now"), Err("unexpected argument \"now\"".into()));
    }
}
