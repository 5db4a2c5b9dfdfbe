//! `get pipeline --watch`: the view redrawn in place on a terminal (crossterm: synchronized
//! updates, each line overwritten and cleared to its end, so nothing flickers), a new copy
//! each time it changes elsewhere, until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crossterm::cursor::{Hide, MoveTo, Show};
use crossterm::style::Print;
use crossterm::terminal::{
    BeginSynchronizedUpdate, Clear, ClearType, EndSynchronizedUpdate, EnterAlternateScreen,
    LeaveAlternateScreen,
};
use crossterm::{execute, queue};

use super::act::Ctx;
use super::{Output, PluginError, encode, palette, view};

/// How often the view is read again.
const EVERY: Duration = Duration::from_secs(1);

pub async fn pipeline(ctx: &Ctx, name: &str, output: Option<Output>) -> Result<u8, PluginError> {
    // A pipeline that does not exist is an error at once, not a screen that says so.
    ctx.pipeline(name).await?;
    let terminal = std::io::stdout().is_terminal() && output.is_none();
    let mut screen = Screen::open(terminal)?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut last = String::new();
    loop {
        let fetched = tokio::select! {
            fetched = ctx.pipeline(name) => fetched,
            _ = &mut interrupted => break,
        };
        let text = match (fetched, output) {
            (Ok(v), Some(o)) => encode(&v, o),
            (Ok(v), None) => view::pipeline_text(&v, palette()),
            (Err(e), _) => format!("{name}: {e}\n"),
        };
        if text != last {
            screen.show(&text)?;
            last = text;
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = &mut interrupted => break,
        }
    }
    Ok(0)
}

/// Where the view goes: redrawn in place on a terminal, appended otherwise.
struct Screen {
    terminal: bool,
    out: std::io::Stdout,
}

impl Screen {
    fn open(terminal: bool) -> Result<Screen, PluginError> {
        let mut out = std::io::stdout();
        if terminal {
            execute!(out, EnterAlternateScreen, Hide)?;
        }
        Ok(Screen { terminal, out })
    }

    fn show(&mut self, text: &str) -> Result<(), PluginError> {
        if !self.terminal {
            writeln!(self.out, "{text}")?;
            return Ok(self.out.flush()?);
        }
        let stamp = jiff::Zoned::now().strftime("%H:%M:%S").to_string();
        queue!(self.out, BeginSynchronizedUpdate, MoveTo(0, 0))?;
        for line in std::iter::once(format!("updated {stamp}  (Ctrl-C to stop)"))
            .chain(text.lines().map(String::from))
        {
            queue!(
                self.out,
                Print(line),
                Clear(ClearType::UntilNewLine),
                Print("\r\n")
            )?;
        }
        queue!(
            self.out,
            Clear(ClearType::FromCursorDown),
            EndSynchronizedUpdate
        )?;
        Ok(self.out.flush()?)
    }
}

/// The terminal is given back however the watch ends: Ctrl-C, an error, a closed pipe.
impl Drop for Screen {
    fn drop(&mut self) {
        if self.terminal {
            let _ = execute!(self.out, Show, LeaveAlternateScreen);
        }
    }
}
