mod certs;
mod daemon;
mod denials;
mod keystore;
