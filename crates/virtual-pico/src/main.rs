//! `virtual-pico --port PORT [--serial SERIAL]`: plugs a blank virtual SmartCard-HSM into the
//! vpcd reader on 127.0.0.1:PORT and serves it until killed.

fn main() {
    let mut port = None;
    let mut serial = "DEVPC00001".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(p)) => port = p.parse::<u16>().ok(),
            ("--serial", Some(s)) => serial = s,
            _ => {
                eprintln!("usage: virtual-pico --port PORT [--serial SERIAL]");
                std::process::exit(2);
            }
        }
    }
    let Some(port) = port else {
        eprintln!("usage: virtual-pico --port PORT [--serial SERIAL]");
        std::process::exit(2);
    };
    let _card =
        virtual_pico::vpcd::VirtualCard::start(port, virtual_pico::card::Card::new(&serial));
    println!("virtual-pico: card {serial} plugged into the vpcd reader on 127.0.0.1:{port}");
    loop {
        std::thread::park();
    }
}
