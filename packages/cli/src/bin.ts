#!/usr/bin/env node
import 'reflect-metadata';
import { main } from './main.js';

await main(process.argv);
